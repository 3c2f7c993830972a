"""The Streamlit explorer of memloc: `streamlit run app/main.py`."""
