FLASK_APP=gcpubsub.py
