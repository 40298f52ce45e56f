"""make runs this with the python3 it would build .venv with (make PYTHON=python3.12 picks
another), before it downloads anything: one line naming the fix when that Python is too old for
requirements.txt or cannot make a venv. Written for any Python 3, as it must run on those it
refuses."""
import sys

# On PyPI, transformers 5.23.0, numpy 2.4.6 and matplotlib 3.11.2 (requirements.txt) need 3.11: on
# 3.10 pip downloads torch (527 MB) and then stops at "No matching distribution found".
NEED = (3, 11)

major, minor, micro = sys.version_info[:3]
if (major, minor) < NEED:
    sys.exit("%s is Python %d.%d.%d; requirements.txt needs 3.11 or newer (transformers "
             "5.23.0, numpy 2.4.6, matplotlib 3.11.2): install one and run make PYTHON=python3.11 "
             "(or python3.12, ...)" % (sys.executable, major, minor, micro))
try:
    import ensurepip  # noqa: F401  venv seeds pip with it; Debian and Ubuntu ship it apart
except ImportError:
    sys.exit("%s cannot make a venv (no ensurepip module): on Debian or Ubuntu, "
             "apt install python%d.%d-venv (or python3-venv), or run make PYTHON=<another python3>"
             % (sys.executable, major, minor))
