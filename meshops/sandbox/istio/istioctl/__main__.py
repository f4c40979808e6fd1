import sys

from meshops.sandbox.istio.istioctl.app import main

sys.exit(main())
