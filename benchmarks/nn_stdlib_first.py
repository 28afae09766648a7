"""Import first in a script of this folder: loads the standard library's ``selectors``.

``benchmarks/selectors.py`` (the rank-selector benchmark) has the name of a standard library
module that ``subprocess`` imports (``torch.compile``, tqdm); a script run from this folder
has the folder first on ``sys.path``, so it would get the benchmark instead. Importing this
module first puts the standard module in ``sys.modules``.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
try:
    import selectors  # noqa: F401
    import subprocess  # noqa: F401
finally:
    sys.path[:] = _saved
