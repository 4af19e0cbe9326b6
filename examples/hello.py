"""A small program for the quickstart: prints, works a little, and exits 0."""

import os
import time

print(f"hello from pid {os.getpid()} in process group {os.getpgid(0)}", flush=True)
start = time.process_time()
total = sum(i * i for i in range(2_000_000))
print(f"computed {total} in {time.process_time() - start:.2f}s of CPU", flush=True)
