"""A tiny scriptable action for quarry's pipeline tests: each word is an operation.

  write PATH TEXT   write TEXT to PATH          sleep SECS     sleep
  read PATH         print PATH's content        fail           exit 3
  csv PATH HEADER N a CSV with HEADER and N rows
  big PATH MIB      a file of MIB mebibytes     echo TEXT      print TEXT
  rest              print the remaining words joined by |, and stop
"""
import os
import sys
import time

args = sys.argv[1:]
i = 0
while i < len(args):
    op = args[i]
    if op == "write":
        path, text = args[i + 1], args[i + 2]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        i += 3
    elif op == "csv":
        path, header, n = args[i + 1], args[i + 2], int(args[i + 3])
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(header + "\n")
            for r in range(n):
                f.write(",".join(str(r) for _ in header.split(",")) + "\n")
        i += 4
    elif op == "big":
        path, mib = args[i + 1], float(args[i + 2])
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x" * int(mib * 1024 * 1024))
        i += 3
    elif op == "sleep":
        time.sleep(float(args[i + 1]))
        i += 2
    elif op == "read":
        with open(args[i + 1]) as f:
            print(f.read())
        i += 2
    elif op == "echo":
        print(args[i + 1], flush=True)
        i += 2
    elif op == "rest":
        print("|".join(args[i + 1:]))
        break
    elif op == "fail":
        print("failing on purpose", file=sys.stderr)
        sys.exit(3)
    else:
        sys.exit(f"act.py: unknown operation {op}")
