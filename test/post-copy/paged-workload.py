"""A process whose memory a test can check after a migration, for post-copy runs with CRIU directly.

    paged-workload.py MIB [TICK_MS [VERIFY_EVERY [TOUCH]]]

Fills MIB MiB, writing a value derived from each page's number at its start (every page is present, none is
zero). Every TICK_MS (50) it reads TOUCH (16) pages chosen at random, as a service serving requests would,
and prints "tick N MS"; every VERIFY_EVERY (20) ticks it checks every page: "verify ok MS", or
"verify BAD PAGE MS" for a page that arrived zero-filled or wrong (a touched page that is wrong says so
too). SIGUSR1 asks for a check at the next tick. The tick count lives in its memory, so a restored copy
that goes on from where it was frozen says so.
"""
import random
import signal
import sys
import time

PAGE = 4096
mib = int(sys.argv[1])
tick_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 50
verify_every = int(sys.argv[3]) if len(sys.argv) > 3 else 20
touch = int(sys.argv[4]) if len(sys.argv) > 4 else 16
pages = mib * 256
memory = bytearray(mib << 20)


def mark(page):
    return ((page + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def intact(page):
    return memory[page * PAGE:page * PAGE + 8] == mark(page)


for page in range(pages):
    memory[page * PAGE:page * PAGE + 8] = mark(page)


def now_ms():
    return int(time.time() * 1000)


asked = False


def ask(_signum, _frame):
    global asked
    asked = True


signal.signal(signal.SIGUSR1, ask)
print("start", pages, now_ms(), flush=True)
tick = 0
while True:
    time.sleep(tick_ms / 1000)
    tick += 1
    for page in random.sample(range(pages), min(touch, pages)):
        if not intact(page):
            print("verify BAD %d" % page, now_ms(), flush=True)
    print("tick", tick, now_ms(), flush=True)
    if tick % verify_every == 0 or asked:
        asked = False
        bad = next((page for page in range(pages) if not intact(page)), None)
        print("verify ok" if bad is None else "verify BAD %d" % bad, now_ms(), flush=True)
