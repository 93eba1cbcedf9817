"""A process whose memory a test can check after a migration, for post-copy runs with CRIU directly.

Fills MIB MiB, writing a value derived from each page's number at its start (every page is present and none
is zero), prints "tick N MS" every 50 ms and, every 20 ticks, checks every page: "verify ok MS" or
"verify BAD PAGE MS" (a page that arrived zero-filled or wrong). The tick count lives in its memory too, so
a restored copy that goes on from where it was frozen says so.
"""
import sys
import time

PAGE = 4096
mib = int(sys.argv[1])
pages = mib * 256
memory = bytearray(mib << 20)


def mark(page):
    return ((page + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


for page in range(pages):
    memory[page * PAGE:page * PAGE + 8] = mark(page)


def now_ms():
    return int(time.time() * 1000)


def verify():
    for page in range(pages):
        if memory[page * PAGE:page * PAGE + 8] != mark(page):
            return page
    return None


print("start", pages, now_ms(), flush=True)
tick = 0
while True:
    time.sleep(0.05)
    tick += 1
    print("tick", tick, now_ms(), flush=True)
    if tick % 20 == 0:
        bad = verify()
        print("verify ok" if bad is None else "verify BAD %d" % bad, now_ms(), flush=True)
