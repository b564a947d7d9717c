"""The second anchor of the audit chain: each signed checkpoint is also published as a Prefect artifact
(`audit-checkpoint`), kept by the Prefect server in its own database, which the change database's writer
cannot reach. `changeflow audit verify --prefect` reads them back (issue 14). The third: the directory's
witnesses receive each one (issue 28)."""

from __future__ import annotations

import asyncio
import json

from prefect import get_client
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows._wiring import wiring
from models import AnchorReport, AuditAnchors, Checkpoint, verify_chain

ARTIFACT_KEY = "audit-checkpoint"


def anchors() -> AuditAnchors:
    rt = wiring()
    return AuditAnchors.from_settings(rt.settings, rt.services.db)


def anchor_checkpoint() -> Checkpoint | None:
    """Sign a checkpoint when one is due and publish it beside the file; None when none was due."""
    checkpoint = anchors().checkpoint()
    if checkpoint is not None:
        create_table_artifact(key=ARTIFACT_KEY, table=[checkpoint.to_dict()],
                              description=f"Signed checkpoint of the audit chain at event {checkpoint.seq}")
        wiring().notifier.witness(checkpoint)  # the third anchor, out of HOME's reach; the sweep delivers it
    return checkpoint


def anchored_checkpoints() -> list[Checkpoint]:
    """Every checkpoint published as an artifact (all versions of the key), as signed."""
    async def read() -> list:
        async with get_client() as client:
            found: list = []
            while page := await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])), offset=len(found),
                    limit=200):
                found += page
                if len(page) < 200:
                    break
            return found

    checkpoints = []
    for artifact in asyncio.run(read()):
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        for row in rows or []:
            try:
                checkpoints.append(Checkpoint.from_dict(row))
            except (ValueError, KeyError, TypeError):
                continue  # not ours; an unsigned or edited row fails its signature check anyway
    return checkpoints


def publish_verification() -> AnchorReport:
    """The chain checked against both anchors, as the `audit-verification` artifact of the run."""
    with wiring().services.db.read() as session:
        chain = verify_chain(session)
    report = anchors().verify(chain, elsewhere=anchored_checkpoints())
    latest = report.latest
    lines = ["# Audit trail verification", "",
             f"- chain: {'intact' if chain.ok else 'BROKEN at event ' + str(chain.first_broken_seq)} "
             f"({chain.count} events){'' if chain.ok else ': ' + chain.reason}",
             f"- signed checkpoints: {report.checkpoints}, "
             + (f"latest anchors event {latest.seq} at {latest.to_dict()['at']} (hash `{latest.hash[:16]}...`)"
                if latest else "none yet"),
             f"- verdict: **{'verified' if chain.ok and report.ok else 'FAILED'}**"]
    lines += [f"- problem: {problem}" for problem in report.problems]
    create_markdown_artifact(key="audit-verification", markdown="\n".join(lines),
                             description="The audit chain against its signed checkpoints")
    return report
