"""A self-contained HTML page of an executed notebook, to attach to a review (``soak report``).

``export_html(notebook)`` converts an executed ``.ipynb`` with nbconvert's ``lab`` template:
code inputs and prompts hidden, images embedded as data URIs, interactive plotly figures
(``soaklib.explore`` and any ``application/vnd.plotly.v1+json`` output) drawn by one copy
of plotly.js inlined in the page, and no script or style loaded from the network (the
template's require.js and MathJax links are removed), so the file opens offline, years
later, in any browser. Widget views (live only in a kernel) are left out: their plotly
figure is in the same output.

``report(path)`` makes the page for any run folder: it exports the run's executed
notebook (``{run_id}.ipynb`` beside the signoff) and, when there is none, first executes
the run's notebook on it with papermill (load mode: the run's files are not rewritten).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError, SoakError
from soaklib.store import atomic_write_text, signoff_paths

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
EXECUTE_TIMEOUT_S = 600  # a notebook cell that runs longer than this fails the report
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.IGNORECASE)
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*>", re.IGNORECASE)


def _plotly_html(spec: dict[str, Any], div_id: str) -> str:
    """A div and the script that draws the figure (plotly.js itself is in the page head)."""
    import plotly.io as pio

    fig = pio.from_json(json.dumps(spec), skip_invalid=True)
    return str(pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                           config={"displaylogo": False, "responsive": True}))


def _prepare(nb: Any) -> int:
    """Plotly outputs get an HTML rendering, widget views are dropped; returns the number of plotly figures."""
    n = 0
    nb.metadata.pop("widgets", None)  # the kernel's widget state: it needs a widget manager from the network
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data:
                continue
            data.pop(WIDGET_MIME, None)
            if PLOTLY_MIME in data:
                spec = data[PLOTLY_MIME]
                spec = json.loads(spec) if isinstance(spec, str) else spec
                data["text/html"] = _plotly_html(spec, f"soak-plotly-{n}")
                data.pop(PLOTLY_MIME)
                n += 1
    return n


def export_html(notebook: str | os.PathLike[str], html: str | os.PathLike[str] | None = None, *,
                show_inputs: bool = False) -> Path:
    """Write ``notebook`` (executed) as one self-contained HTML file (default: beside it, ``.html``)."""
    import nbformat
    from nbconvert import HTMLExporter

    src = Path(notebook)
    if not src.is_file() or src.suffix != ".ipynb":
        raise ParameterError(f"{str(src)!r} is not a notebook file (.ipynb)", key="notebook", value=str(src))
    target = Path(html) if html is not None else src.with_suffix(".html")
    nb = nbformat.read(src, as_version=4)  # type: ignore[no-untyped-call]
    n_plotly = _prepare(nb)
    exporter = HTMLExporter(template_name="lab", exclude_input=not show_inputs, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": src.stem}})
    body = _REMOTE_LINK.sub("", _REMOTE_SCRIPT.sub("", body))
    if n_plotly:
        from plotly.offline import get_plotlyjs

        head = f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>'
        body = body.replace("</head>", head, 1)
    return atomic_write_text(target, body)


# --------------------------------------------------------------------------- any run folder


def notebook_dir() -> Path:
    """The toolkit's notebooks (``notebooks/`` of the source tree)."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if not here.is_dir():
        raise ParameterError("the soaklib notebooks are not installed beside the package (notebooks/): "
                             "run from a source checkout (pip install -e .)", key="notebook")
    return here


def _execute(template: Path, output: Path, parameters: dict[str, Any]) -> Path:
    import logging

    import papermill

    tmp = output.with_name(f".{output.stem}.tmp.ipynb")
    log = logging.getLogger("papermill")
    level = log.level
    log.setLevel(logging.ERROR)  # papermill's notes on typed parameter lines are not the user's concern
    try:
        papermill.execute_notebook(str(template), str(tmp), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, log_output=False, execution_timeout=EXECUTE_TIMEOUT_S,
                                   cwd=str(Path.cwd()))
    except papermill.PapermillExecutionError as e:
        raise SoakError(f"executing {template.name} on the run failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                        f"(the failed notebook is {tmp})") from e
    finally:
        log.setLevel(level)
    os.replace(tmp, output)
    return output


def report(path: str | os.PathLike[str]) -> dict[str, Path]:
    """The HTML page of a run folder (or its signoff JSON, or an executed notebook): ``{"ipynb", "html"}``."""
    from soaklib.runs import load_run

    p = Path(path)
    if p.suffix == ".ipynb":
        return {"ipynb": p, "html": export_html(p)}
    run = load_run(p)
    json_path, _ = signoff_paths(run.path)
    nb = json_path.with_suffix(".ipynb")
    if not nb.exists():
        if run.kind == "multi-provider":
            if not json_path.exists():
                raise ParameterError(f"{run.path} has no evidence {json_path.name}: nothing to report",
                                     key="run_dir", value=str(run.path))
            _execute(notebook_dir() / "multi_provider.ipynb", nb,
                     {"runs_json": str(json_path), "fail_on_gate": False})
        elif run.kind.startswith("watcher-"):
            _execute(notebook_dir() / "watcher_soak.ipynb", nb,
                     {"run_dir": str(run.path), "soak": run.kind.removeprefix("watcher-"), "fail_on_gate": False})
        else:
            raise ParameterError(f"{run.path} is a {run.kind} run: soak report knows multi-provider and WATCHER runs",
                                 key="run_dir", value=str(run.path))
    return {"ipynb": nb, "html": export_html(nb)}
