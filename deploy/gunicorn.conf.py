"""gunicorn settings for trialmgr: `gunicorn -c deploy/gunicorn.conf.py trialmgr.wsgi:app`."""

import multiprocessing
import os

bind = os.environ.get("TRIALMGR_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("TRIALMGR_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("TRIALMGR_THREADS", "1"))
timeout = 60
graceful_timeout = 30
keepalive = 5
max_requests = 2000          # recycle workers now and then: bounds any slow leak
max_requests_jitter = 200
accesslog = os.environ.get("TRIALMGR_ACCESS_LOG", "-")
errorlog = "-"
access_log_format = '%(h)s %({x-request-id}o)s "%(r)s" %(s)s %(b)s %(M)sms'
forwarded_allow_ips = os.environ.get("TRIALMGR_FORWARDED_ALLOW_IPS", "127.0.0.1")
preload_app = False          # each worker opens its own database pool after the fork
