from tiphub.cli import app

app()
