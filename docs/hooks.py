"""mkdocs hook: the estimator table is made from the estimator records when the site is built, so it
cannot drift from them (``vae_pyro.report.markdown.estimator_table``)."""

MARKER = "<!-- estimator-table -->"


def on_page_markdown(markdown: str, **_) -> str:
    if MARKER not in markdown:
        return markdown
    from vae_pyro.report.markdown import estimator_table

    return markdown.replace(MARKER, estimator_table())
