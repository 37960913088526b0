#!/bin/sh
# check-symbols.sh LIBRARY.so - fail if the shared library exports a defined
# dynamic symbol whose name does not start with fut_ (an internal name that
# leaked past -fvisibility=hidden and -export-symbols-regex), or exports no
# fut_ symbol at all. Uses $NM if set (make check passes libtool's), else nm.
# Exit: 0 clean, 1 leak, 99 cannot read the library (automake's hard error).
set -eu

lib=${1:?usage: check-symbols.sh LIBRARY.so}
nm=${NM:-nm}

# One "VALUE TYPE NAME" line per symbol (BSD format); names may carry a
# version suffix (name@@VERSION) that is not part of the name.
if ! syms=$($nm -D --defined-only "$lib"); then
    echo "check-symbols: '$nm -D --defined-only $lib' failed" >&2
    exit 99
fi
names=$(printf '%s\n' "$syms" | awk 'NF >= 2 { n = $NF; sub(/@.*/, "", n); print n }')
leaks=$(printf '%s\n' "$names" | grep -v '^fut_' || true)
public=$(printf '%s\n' "$names" | grep -c '^fut_' || true)

if [ -n "$leaks" ]; then
    echo "check-symbols: $lib exports symbols outside the fut_ namespace:" >&2
    printf '    %s\n' $leaks >&2
    exit 1
fi
if [ "$public" -eq 0 ]; then
    echo "check-symbols: $lib exports no fut_ symbol at all" >&2
    exit 1
fi
echo "check-symbols: $lib exports $public symbols, all fut_*"
