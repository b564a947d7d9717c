"""Recovery figures for changeflow's own data (issue 31): how long `changeflow db backup` (copy and proof in a
throw-away database), `db verify-backup` and `db restore` take on a seeded history (benchmarks/seed_history.py).

    python benchmarks/backup_restore.py --changes 100000
    python benchmarks/backup_restore.py --changes 1000000 --database postgres
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import BackupService, Database, Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="changeflow-backup-bench-"))
    seed = [sys.executable, str(Path(__file__).with_name("seed_history.py")), "--changes", str(args.changes),
            "--database", args.database]
    if args.database == "sqlite":
        seed += ["--path", str(work / "history.db")]
        url = f"sqlite:///{work / 'history.db'}"
    else:
        seed += ["--postgres-url", args.postgres_url, "--schema", "cf_backup_bench"]
        url = f"{args.postgres_url}?options=-csearch_path%3Dcf_backup_bench"
    started = time.perf_counter()
    subprocess.run(seed, check=True, capture_output=True)
    print(f"seeded {args.changes:,} changes ({args.database}) in {time.perf_counter() - started:.0f} s")
    settings = Settings(home=work / "home")
    settings.ensure_home()
    db = Database(url)
    backups = BackupService(db, settings)
    made = backups.backup(work / "backups")
    size = sum(p.stat().st_size for p in made.folder.iterdir()) / 1e6
    print(f"backup + proof: {made.seconds:.1f} s, {size:.0f} MB, {made.events:,} events, "
          f"{len(made.problems)} problems {made.problems[:2]}")
    proved = backups.verify(made.folder)
    print(f"verify-backup:  {proved.seconds:.1f} s")
    started = time.perf_counter()
    restored = backups.restore(made.folder, replace=True)
    print(f"restore (proof, then load): {time.perf_counter() - started:.1f} s, ok={restored.ok}")
    db.dispose()


if __name__ == "__main__":
    main()
