"""faasd's Python agent, as a sandbox starts it (``python3 /faasd/agent/python/agent.py ...``).

The agent itself is the module ``faasd_agent`` (see its docstring). A script is compiled on every start,
an imported module is loaded from its bytecode cache (``__pycache__`` next to it, written on the host:
the agent directory is mounted read-only), so this file only imports it: ~7 ms less per sandbox start.
Standard library only, Python 3.8+.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import faasd_agent  # takes the agent directory off sys.path again (user modules must not be shadowed)

    sys.exit(faasd_agent.main())
