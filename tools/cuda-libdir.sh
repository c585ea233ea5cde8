#!/bin/sh
# cuda-libdir.sh NVCC — prints the directory the CUDA toolkit's runtime libraries (cudart,
# cublas) live in, as NVCC itself would link them. Asked of nvcc rather than derived from its
# path because nvcc may be a wrapper script outside the toolkit (/usr/local/bin/nvcc that
# execs /usr/local/cuda-13.0/bin/nvcc): a dry run's LIBRARIES line names the real -L dirs.
set -eu
nvcc=$1
"$nvcc" --dryrun -x cu /dev/null -o /dev/null 2>&1 |
    sed -n 's/^#\$ LIBRARIES=//p' | tr ' ' '\n' | tr -d '"' | sed -n 's/^-L//p' |
    grep -v '/stubs$' | tail -n 1 | xargs -r readlink -f
