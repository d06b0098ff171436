"""gunicorn trialmgr.wsgi:app"""

from trialmgr import create_app

app = create_app()
