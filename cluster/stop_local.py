"""Stop the local Ray cluster whose files live under TEMP_DIR and whose head listens on PORT, and no other
(`ray stop` ends every Ray of the machine's user). Its daemons name that folder, or the head's address,
on their command line; workers and agents are their children.
Usage: python cluster/stop_local.py TEMP_DIR PORT"""
import sys

import psutil


def names_cluster(part: str, temp_dir: str, port: str) -> bool:
    return (temp_dir + "/" in part or part.endswith("=" + temp_dir)
            or (part.startswith(("--address=", "--gcs-address=", "--gcs_address=")) and part.endswith(":" + port)))


def cluster_processes(temp_dir: str, port: str) -> list[psutil.Process]:
    daemons = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(names_cluster(part, temp_dir.rstrip("/"), port) for part in proc.info["cmdline"] or []):
            daemons.append(proc)
    found = {p.pid: p for p in daemons}
    for proc in daemons:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return list(found.values())


def main(temp_dir: str, port: str) -> int:
    procs = cluster_processes(temp_dir, port)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    print(f"stopped {len(procs)} processes of the Ray cluster under {temp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
