from minirft.cli import main

main()
