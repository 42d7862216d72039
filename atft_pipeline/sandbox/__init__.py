"""Offline J-Quants: the synthetic market, the stand-in server and replay directories."""
