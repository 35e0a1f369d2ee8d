import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import User
from tests.conftest import drop_schema, make_config


def _admins(app):
    with app.app_context():
        return list(db.session.scalars(sa.select(User).where(User.is_admin.is_(True))))


def test_deploy_twice_leaves_one_admin_with_first_password(app, runner):
    drop_schema(app)
    first = runner.invoke(args=["deploy"])
    assert first.exit_code == 0, first.output
    assert "Created admin user 'admin' with password: " in first.output
    password = first.output.split("with password: ")[1].split()[0]
    assert len(password) >= 12

    second = runner.invoke(args=["deploy"])
    assert second.exit_code == 0, second.output
    assert password not in second.output

    admins = _admins(app)
    assert len(admins) == 1
    assert admins[0].check_password(password)


def test_deploy_uses_admin_password_from_environment(database_url, redis_server):
    app = create_app(make_config(database_url, redis_server.url, ADMIN_PASSWORD="from-the-env-1"))
    drop_schema(app)
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["deploy"])
        assert result.exit_code == 0, result.output
        assert "from-the-env-1" not in result.output
        admin = db.session.scalar(sa.select(User).where(User.username == "admin"))
        assert admin.is_admin and admin.check_password("from-the-env-1")
        db.session.remove()
        db.engine.dispose()


def test_generated_admin_passwords_differ_between_installs(app, runner):
    passwords = []
    for _ in range(2):
        drop_schema(app)
        output = runner.invoke(args=["deploy"]).output
        passwords.append(output.split("with password: ")[1].split()[0])
    assert passwords[0] != passwords[1]
