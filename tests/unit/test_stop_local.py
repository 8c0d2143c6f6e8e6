"""cluster/stop_local.py picks the processes of one local Ray cluster, and no one else's."""
from tests.helpers import cluster_script_module

stop_local = cluster_script_module("stop_local")

TMP = "/tmp/synthpref-ray-6390"
SESSION = f"{TMP}/session_2026-11-27_17-45-38_515300_2748"
PKG = "/work/main/.venv/lib/python3.11/site-packages/ray"
HOSTS = {"127.0.0.1", "localhost", "192.0.2.2"}


def belongs(cmdline: str, port: str = "6390") -> bool:
    return stop_local.belongs_to_cluster(cmdline.split(), TMP, port, HOSTS)


def test_the_clusters_daemons_are_found():
    assert belongs(f"{PKG}/core/src/ray/gcs/gcs_server --log_dir={SESSION}/logs --gcs_server_port=6390")
    assert belongs(f"{PKG}/core/src/ray/raylet/raylet --raylet_socket_name={SESSION}/sockets/raylet.1")
    assert belongs(f"python3 {PKG}/dashboard/dashboard.py --host=127.0.0.1 --port=8269 --temp-dir={TMP}")
    assert belongs(f"python3 -u {PKG}/_private/log_monitor.py --session-dir={SESSION}")
    # the client server names only the head's address
    assert belongs("python3 -m ray.util.client.server --address=192.0.2.2:6390 --host=192.0.2.2 --port=10001")


def test_other_clusters_and_other_programs_are_spared():
    assert not belongs(f"{PKG}/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/ray/session_x/sockets/raylet")
    assert not belongs("python3 -m ray.util.client.server --address=10.0.0.5:6390")      # a remote head
    assert not belongs("python3 -m ray.util.client.server --address=192.0.2.2:6391")     # another port
    assert not belongs(f"tail -f {SESSION}/logs/raylet.out")                            # not a Ray program
    assert not belongs(f"python3 cluster/stop_local.py {TMP} 6390")
    assert not belongs(f"{PKG}/core/src/ray/raylet/raylet --session_dir={TMP}-other/session_1", port="6391")


def test_worker_nodes_with_their_own_temp_dirs_are_found():
    """local_multinode.sh gives worker i the folder TMP-wi: its daemons belong to the cluster even when
    their command line names no head address."""
    assert belongs(f"{PKG}/core/src/ray/raylet/raylet --session_dir={TMP}-w0/session_1", port="6391")
    assert belongs(f"python3 -u {PKG}/_private/log_monitor.py --logs-dir={TMP}-w12/session_2/logs", port="6391")
    assert not belongs(f"{PKG}/core/src/ray/raylet/raylet --session_dir={TMP}-wx/session_1", port="6391")
