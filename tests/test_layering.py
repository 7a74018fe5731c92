"""The engine is importable and usable without Streamlit; app.py only routes."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_never_imports_streamlit():
    code = ("import sys, pkgutil, importlib, cxrviz\n"
            "for m in pkgutil.walk_packages(cxrviz.__path__, 'cxrviz.'):\n"
            "    if m.name != 'cxrviz.__main__':\n"
            "        importlib.import_module(m.name)\n"
            "assert 'streamlit' not in sys.modules, 'streamlit imported by the engine'\n"
            "print('ok')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_app_py_only_routes():
    src = (ROOT / "app.py").read_text()
    assert "st.navigation" in src and "cxrviz" not in src.replace("cxrviz:", "")
