#!/usr/bin/env bash
# Build the documentation site in strict mode: any warning (a broken link, a reference to a
# missing module or object, a docstring griffe cannot parse) fails the build.
# Usage: scripts/build_docs.sh [OUTPUT_DIR]   (default: site/)
# Needs: pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1
mkdocs build --strict --clean --site-dir "${1:-site}"
