"""cxrviz: train, explain and rank classic CNNs on chest X-rays. The engine; no Streamlit here."""
__version__ = "0.1.0"
