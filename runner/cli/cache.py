"""`mlproject cache`: the git project cache and the staged projects."""
from __future__ import annotations

import click

from runner.cli.common import Group, debug_option, out, say

@click.group(cls=Group, help="manage the git project cache")
def cache() -> None:
    pass


@cache.command("list", help="cached git mirrors and checkouts")
@debug_option
def cache_list() -> int:
    import time

    from runner.envs.admin import human_age
    from runner.sources import cache as git_cache

    now = time.time()
    mirrors, checkouts = git_cache.list_mirrors(), git_cache.list_checkouts()
    if not mirrors and not checkouts:
        say("the git cache is empty")
        return 0
    out(f"{'MIRROR':<14}{'LAST USED':<12}URL")
    for mirror in sorted(mirrors, key=lambda m: -m.last_used):
        out(f"{'-':<14}{human_age(now - mirror.last_used):<12}{mirror.url}")
    out(f"{'CHECKOUT':<14}{'LAST USED':<12}URL")
    for item in sorted(checkouts, key=lambda c: -c.last_used):
        out(f"{item.commit[:12]:<14}{human_age(now - item.last_used):<12}{item.url}")
    return 0


@cache.command("gc", help="remove checkouts, mirrors, staged projects and sent offline runs not used for a while "
                           "(never one in use)")
@click.option("--older-than", required=True, metavar="DURATION", help="30d, 12h, 45m, 30s; 0 for all unused")
@click.option("--dry-run", is_flag=True, help="print what would be removed and the space freed; remove nothing")
@click.option("--staging-dir", default=None, type=click.Path(file_okay=False),
              help="the cluster backends' staging_dir (default: $MLPROJECT_HOME/staging)")
@debug_option
def cache_gc(older_than: str, dry_run: bool, staging_dir: str | None) -> int:
    from runner import home
    from runner.backends import staging
    from runner.envs.admin import human_size, parse_duration
    from runner.sources import cache as git_cache

    age = parse_duration(older_than)
    result = git_cache.gc(age, dry_run)
    verb, freed = ("would remove", "would be freed") if dry_run else ("removed", "freed")
    out(f"{verb} {result.checkouts_removed} checkout(s) and {result.mirrors_removed} mirror(s); "
         f"kept {result.checkouts_in_use} checkout(s) in use and {result.mirrors_kept} mirror(s); "
         f"{human_size(result.freed)} {freed}" + ("; nothing was removed (--dry-run)" if dry_run else ""))
    root = home.staging(staging_dir)
    staged = staging.gc(root, age, dry_run)
    out(f"{verb} {staged.removed} staged project(s), {staged.environments_removed} packed environment(s), "
         f"{staged.jobs_removed} ended job(s)' files and {staged.leftovers} leftover(s) in {root}; "
         f"kept {staged.in_use} named by queued or running jobs and {staged.kept} used recently, "
         f"and {staged.environments_kept} packed environment(s) used recently; "
         f"{human_size(staged.freed)} {freed}" + ("; nothing was removed (--dry-run)" if dry_run else ""))
    from runner.tracking import offline

    sent = offline.forget_sent(age, dry_run)
    out(f"{verb} the offline originals of {sent.runs} run(s) sent to their tracking server; "
        f"{human_size(sent.freed)} {freed}" + ("; nothing was removed (--dry-run)" if dry_run else ""))
    return 0
