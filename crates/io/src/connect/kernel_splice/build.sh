#!/bin/sh
# Rebuilds splice.bpf.o from splice.bpf.c (Debian: clang-14, llvm-14, libbpf-dev,
# linux-libc-dev). The object is committed so that building tlsgate needs no BPF compiler; a
# test rebuilds it and checks that it matches. BTF stays (bpf_loop's callback needs it); the
# DWARF, which names the build directory, goes.
set -eu
cd "$(dirname "$0")"
out=${1:-splice.bpf.o}
clang-14 -g -O2 -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu \
    -fno-ident -fdebug-compilation-dir=. -fdebug-prefix-map="$(pwd)"=. -c splice.bpf.c -o "$out"
llvm-strip-14 --strip-debug "$out"
