"""The architecture, checked: imports run downward (CLI -> train -> judge -> base) and the kernel package
stands alone. Inside the judge: backends know nothing of criterion methods or modes, the methods know
nothing of the modes, the judge classes or the backends, and the modes nothing of the judge classes."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minirft"
KERNELS = ROOT / "kernels" / "minirft_kernels"

# (files under this folder, may not import modules starting with any of these)
FORBIDDEN = [
    ("judge", ("minirft.train", "minirft.commands", "minirft.cli", "minirft.tui")),
    ("train", ("minirft.tui", "minirft.commands", "minirft.cli")),
    ("tui", ("minirft.train", "minirft.judge", "minirft.commands", "minirft.cli")),
    ("integrations", ("minirft.train", "minirft.commands", "minirft.cli", "minirft.tui")),
    ("judge/backends", ("minirft.judge.methods", "minirft.judge.modes", "minirft.judge.core", "minirft.judge.panel",
                        "minirft.judge.service")),
    ("judge/methods", ("minirft.judge.modes", "minirft.judge.core", "minirft.judge.panel", "minirft.judge.backends",
                       "minirft.judge.cache", "minirft.judge.service")),
]
FORBIDDEN_FILES = [  # (one module, may not import these)
    ("judge/modes.py", ("minirft.judge.core", "minirft.judge.panel", "minirft.judge.backends",
                        "minirft.judge.service")),
]
BASE = ("recipe.py", "data.py", "models.py", "events.py", "rewards.py", "stats.py", "atomic.py", "errors.py",
        "agreement.py", "labels.py", "llamacpp.py", "cuda_memory.py", "rundir.py")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations() -> list[str]:
    bad = []
    for folder, banned in FORBIDDEN:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for line, mod in imported_modules(path):
                if mod.startswith(banned):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: imports {mod}")
    for name, banned in FORBIDDEN_FILES:
        for line, mod in imported_modules(PACKAGE / name):
            if mod.startswith(banned):
                bad.append(f"minirft/{name}:{line}: imports {mod}")
    for name in BASE:  # the base modules import nothing above them
        for line, mod in imported_modules(PACKAGE / name):
            if mod.startswith(("minirft.judge", "minirft.train", "minirft.tui", "minirft.commands", "minirft.cli")):
                bad.append(f"minirft/{name}:{line}: imports {mod}")
    for path in sorted(KERNELS.rglob("*.py")):
        for line, mod in imported_modules(path):
            if mod == "minirft" or mod.startswith("minirft."):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {mod}")
    return bad


def test_no_import_runs_up_the_layers():
    assert violations() == []


def test_the_checker_sees_a_violation(tmp_path):
    """The walk finds imports inside functions, where a lazy import up the layers would hide."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from minirft.train.loop import train\n")
    assert imported_modules(f) == [(2, "minirft.train.loop")]


def test_kernels_import_and_run_without_minirft():
    code = ("import sys\n"
            "sys.modules['minirft'] = None  # any `import minirft...` now raises ImportError\n"
            "import torch\n"
            "import minirft_kernels as k\n"
            "from minirft_kernels.hf import lm_head_weight\n"
            "h = torch.randn(3, 5, 8); w = torch.randn(11, 8); t = torch.randint(0, 11, (3, 5))\n"
            "lp = k.selective_logprobs(h, w, t)\n"
            "ref = torch.log_softmax(h @ w.T, -1).gather(-1, t[..., None])[..., 0]\n"
            "assert torch.allclose(lp, ref, atol=1e-5)\n"
            "try:\n"
            "    k.resolve_backend(torch.device('cpu'), 'nope')\n"
            "except k.KernelError as e:\n"
            "    print('KernelError', e)\n"
            "assert not any(m == 'minirft' or m.startswith('minirft.') for m in sys.modules if sys.modules[m])\n")
    env = {"PYTHONPATH": str(ROOT / "kernels"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert res.returncode == 0, res.stderr
    assert "KernelError MINIRFT_KERNELS='nope'" in res.stdout
