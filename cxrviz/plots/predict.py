"""Prediction charts (Compare): one run's class probabilities as horizontal bars."""
from __future__ import annotations

import plotly.graph_objects as go

PREDICTED = "#d62728"
OTHER = "#9aa5b1"


def probability_bars(pred, height: int = 170) -> go.Figure:
    """A :class:`cxrviz.predict.Prediction`'s probabilities in %, the predicted class highlighted."""
    colors = [PREDICTED if c == pred.predicted else OTHER for c in pred.classes]
    fig = go.Figure(go.Bar(x=[100 * p for p in pred.probs], y=pred.classes, orientation="h", marker_color=colors,
                           text=[f"{100 * p:.1f} %" for p in pred.probs], textposition="auto",
                           hovertemplate="%{y}: %{x:.1f} %<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=4, b=0), xaxis=dict(range=[0, 100], title=None),
                      yaxis=dict(autorange="reversed"), showlegend=False)
    return fig
