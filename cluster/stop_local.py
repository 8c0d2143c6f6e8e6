"""Stop the local Ray cluster whose files live under TEMP_DIR and whose head listens on PORT of this
machine, and no other (`ray stop` ends every Ray of the machine's user). Its daemons (gcs_server, raylet,
dashboard, monitors, client server) name that folder or the head's local address on their command line;
workers and agents are their children.

    python cluster/stop_local.py TEMP_DIR PORT
"""
import os
import re
import sys

import psutil

ADDRESS_FLAGS = ("--address=", "--gcs-address=", "--gcs_address=")


def is_ray_daemon(cmdline: list[str], temp_dir: str) -> bool:
    """A Ray program (not, say, `tail -f` of one of its logs): its binary or module lives in the ray package."""
    text = " ".join(cmdline).replace(temp_dir, "")
    return "/ray/" in text or " ray." in text or text.startswith("ray::")


def belongs_to_cluster(cmdline: list[str], temp_dir: str, port: str, local_hosts: set[str]) -> bool:
    """True for a Ray daemon of the cluster under `temp_dir` whose head is at a local address on `port`."""
    temp_dir = temp_dir.rstrip("/")
    if not cmdline or not is_ray_daemon(cmdline, temp_dir):
        return False
    for part in cmdline:
        if temp_dir + "/" in part or part.endswith("=" + temp_dir) or re.search(re.escape(temp_dir) + r"-w\d+(/|$)", part):
            return True                            # the head's folder, or worker i's (TEMP_DIR-wi)
        if part.startswith(ADDRESS_FLAGS):
            host, _, head_port = part.split("=", 1)[1].rpartition(":")
            if head_port == port and host in local_hosts:
                return True
    return False


def local_hosts() -> set[str]:
    hosts = {"127.0.0.1", "localhost"}
    for addresses in psutil.net_if_addrs().values():
        hosts.update(a.address for a in addresses if a.family.name == "AF_INET")
    return hosts


def cluster_processes(temp_dir: str, port: str) -> list[psutil.Process]:
    """The cluster's daemons and all their descendants, never this process or its ancestors."""
    me = psutil.Process(os.getpid())
    spared = {me.pid, *(p.pid for p in me.parents())}
    hosts = local_hosts()
    daemons = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid not in spared and belongs_to_cluster(proc.info["cmdline"] or [], temp_dir, port, hosts):
            daemons.append(proc)
    found = {p.pid: p for p in daemons}
    for proc in daemons:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True) if c.pid not in spared})
        except psutil.Error:
            pass
    return list(found.values())


def main(temp_dir: str, port: str) -> int:
    procs = cluster_processes(temp_dir, port)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    print(f"stopped {len(procs)} processes of the Ray cluster under {temp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
