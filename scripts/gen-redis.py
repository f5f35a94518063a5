#!/usr/bin/env python3
"""Emit RESP commands for redis-cli --pipe: N keys of realistic data (about VALUE bytes each).

Strings with real entropy (hex digests, json, lorem text, timestamps), every tenth key a hash
of ten fields: compresses roughly 2-3:1, not 50:1 like redis-benchmark's 'xxx' values.
"""
import hashlib
import random
import sys

n = int(sys.argv[1])
size = int(sys.argv[2])
rng = random.Random(42)
out = sys.stdout.buffer
LOREM = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


def resp(*parts):
    b = [b"*%d\r\n" % len(parts)]
    for p in parts:
        b.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(b)


def value(i):
    parts = []
    total = 0
    while total < size:
        h = hashlib.md5(b"%d-%d" % (i, total)).hexdigest().encode()
        piece = b'{"id":%d,"tag":"%s","ts":"2026-%02d-%02dT%02d:%02d:%02dZ","n":%d} %s %s ' % (
            i, h, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
            rng.randint(0, 59), rng.randint(0, 59), rng.getrandbits(32), h[::-1], LOREM[: rng.randint(10, 70)])
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)[:size]


buf = []
for i in range(n):
    if i % 10 == 9:
        args = [b"HSET", b"user:%d" % i]
        v = value(i)
        step = max(1, len(v) // 10)
        for f in range(10):
            args += [b"f%d" % f, v[f * step:(f + 1) * step]]
        buf.append(resp(*args))
    else:
        buf.append(resp(b"SET", b"doc:%d" % i, value(i)))
    if len(buf) >= 1000:
        out.write(b"".join(buf))
        buf.clear()
out.write(b"".join(buf))
