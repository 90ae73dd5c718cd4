"""Chart values drawn as PNG with matplotlib, for Word documents and Google Docs/Slides (which take images).

Uses the object-oriented Figure API with the Agg canvas, not pyplot, so renders in worker threads
share no global state.
"""

from __future__ import annotations

import io

from core.templates.values import ChartValue, ImageValue


def chart_png(chart: ChartValue, width_in: float = 6.0, height_in: float = 3.5, dpi: int = 150) -> ImageValue:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cats = chart.categories
    n = max(len(chart.series), 1)
    if chart.kind == "pie":
        name, values = chart.series[0]
        ax.pie(values, labels=cats, autopct="%1.0f%%", startangle=90, counterclock=False)
        ax.set_aspect("equal")
    elif chart.kind == "line":
        for name, values in chart.series:
            ax.plot(cats, values, marker="o", label=name)
    else:
        width = 0.8 / n
        for i, (name, values) in enumerate(chart.series):
            offsets = [k + (i - (n - 1) / 2) * width for k in range(len(cats))]
            if chart.kind == "bar":
                ax.barh(offsets, values, height=width, label=name)
            else:
                ax.bar(offsets, values, width=width, label=name)
        if chart.kind == "bar":
            ax.set_yticks(range(len(cats)), cats)
        else:
            ax.set_xticks(range(len(cats)), cats)
    if chart.title:
        ax.set_title(chart.title)
    if chart.kind != "pie" and n > 1:
        ax.legend(frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    # No Software/date metadata: the same chart always gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    w, h = int(width_in * dpi), int(height_in * dpi)
    return ImageValue(data=buf.getvalue(), format="PNG", width=w, height=h)
