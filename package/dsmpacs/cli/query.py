"""`dsmpacs query PEER`: C-FIND another AE (or this archive) and print a table."""
from __future__ import annotations

import sys

import click

from dsmpacs.cli import Context, main, pass_ctx
from dsmpacs.cli.table import print_table
from dsmpacs.cli.transfer import resolve_peer

DEFAULT_KEYS = {
    "PATIENT": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "NumberOfPatientRelatedStudies"],
    "STUDY": ["PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber",
              "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances",
              "StudyInstanceUID"],
    "SERIES": ["SeriesNumber", "Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances",
               "SeriesInstanceUID"],
    "IMAGE": ["InstanceNumber", "SOPClassUID", "SOPInstanceUID"],
}


def _parse_keys(items: tuple[str, ...]) -> dict[str, str]:
    from dsmpacs.dicom.find_scu import QueryFailed, keyword_vr

    keys = {}
    for item in items:
        keyword, _, value = item.partition("=")
        keyword = keyword.strip()
        try:
            keyword_vr(keyword)
        except QueryFailed as exc:
            raise click.BadParameter(str(exc), param_hint="-k") from None
        keys[keyword] = value
    return keys


@main.command()
@click.argument("target", metavar="PEER")
@click.option("--level", "-l", type=click.Choice(list(DEFAULT_KEYS), case_sensitive=False),
              default="STUDY", show_default=True, help="Query/Retrieve level.")
@click.option("--model", "-m", type=click.Choice(["study", "patient"]),
              help="Information model: Study Root, or Patient Root (default for --level PATIENT).")
@click.option("-k", "--key", "keys", multiple=True, metavar="KEYWORD[=VALUE]",
              help="Matching key (PatientName=ZHANG*, StudyDate=20170101-) or, without a "
                   "value, an extra column. Repeatable.")
@click.option("--charset", default="ISO_IR 192", show_default=True,
              help="Specific Character Set of the query (e.g. GB18030 for peers without UTF-8).")
@pass_ctx
def query(ctx: Context, target: str, level: str, model: str | None, keys: tuple[str, ...],
          charset: str) -> None:
    """C-FIND a peer (registered name or AE@HOST:PORT) and print the matches."""
    from dsmpacs.dicom.find_scu import FindResult, QueryFailed, find
    from dsmpacs.dicom.scu import AssociationFailed

    level = level.upper()
    model = model or ("patient" if level == "PATIENT" else "study")
    wanted = {k: "" for k in DEFAULT_KEYS[level]}
    wanted.update(_parse_keys(keys))
    peer = resolve_peer(ctx, target)
    matches: list[dict[str, str]] = []
    final: FindResult | None = None
    warned = False
    try:
        for result in find(ctx.settings(), peer, level, wanted, model=model, charset=charset):
            if result.pending:
                matches.append(result.values)
                warned |= result.status == 0xFF01
            else:
                final = result
    except (AssociationFailed, QueryFailed) as exc:
        raise click.ClickException(str(exc)) from None

    columns = list(wanted)
    columns += [k for m in matches for k in m if k not in columns]
    if matches:
        print_table(columns, [[m.get(c, "") for c in columns] for m in matches])
    click.echo(f"{len(matches)} match{'es' if len(matches) != 1 else ''} from {peer}"
               + (" (the peer did not support some keys)" if warned else ""))
    if final is None or final.status != 0:
        click.echo(f"query ended with {final.describe if final else 'no final status'}", err=True)
        sys.exit(1)
