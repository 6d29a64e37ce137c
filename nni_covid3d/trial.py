"""``python -m nni_covid3d.trial MODE``: the NNI trial entry point the nnictl configs call.

The trial lives in :mod:`nni_covid3d.nnictl.trial`; this module keeps the configs' command working.
"""
import sys

from nni_covid3d.nnictl.trial import main

if __name__ == "__main__":
    sys.exit(main())
