"""Synology DSM integration: the wizard's rules, the config it produces, DSM's files.

The lifecycle scripts in dsm/scripts/ stay thin shell and call ``dsmpacs dsm ...``
(cli/dsm.py), which calls the modules here.
"""
