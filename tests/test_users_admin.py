"""User administration in the browser's forms (admin only) and on the command line: one set of rules."""

import re
import threading
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Task, User, UserItem
from app.pubsub.messages import build_row
from app.pubsub.writer import BatchWriter, UserGone
from app.users import delete_user
from tests.bulk import insert_rows, item_row
from tests.conftest import TEST_PASSWORD, AuthActions, create_user

NEW_PASSWORD = re.compile(r'id="new-password"[^>]*>([^<]+)<')


def user_named(app, username):
    with app.app_context():
        return db.session.scalar(sa.select(User).where(User.username == username))


def signed_in_admin(app, client):
    create_user(app, "root", is_admin=True)
    auth = AuthActions(client)
    auth.login("root")
    return auth.csrf_token("/admin/users")


def test_non_admin_is_refused_every_users_page(app, client, auth):
    create_user(app, "alice")
    bob_id = create_user(app, "bob")
    auth.login()
    token = auth.csrf_token("/account")
    assert client.get("/admin/users").status_code == 403
    assert client.get(f"/admin/users/{bob_id}/delete").status_code == 403
    for path in ["/admin/users", f"/admin/users/{bob_id}/password", f"/admin/users/{bob_id}/admin",
                 f"/admin/users/{bob_id}/delete"]:
        assert client.post(path, data={"csrf_token": token, "username": "mallory"}).status_code == 403
    assert user_named(app, "mallory") is None and not user_named(app, "bob").is_admin
    assert b'href="/admin/users"' not in client.get("/account").data


def test_admin_creates_a_user_and_sees_the_generated_password_once(app, client):
    token = signed_in_admin(app, client)
    response = client.post("/admin/users", data={"csrf_token": token, "username": "carol", "email": ""})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    password = NEW_PASSWORD.search(response.get_data(as_text=True)).group(1)
    carol = user_named(app, "carol")
    assert carol.email == "carol@localhost" and not carol.is_admin and carol.check_password(password)
    assert password not in client.get("/admin/users").get_data(as_text=True)  # once only
    again = client.post("/admin/users", data={"csrf_token": token, "username": "carol"})
    assert again.status_code == 400 and "User &#39;carol&#39; exists already." in again.get_data(as_text=True)


def test_users_pages_need_the_csrf_token(app, client):
    signed_in_admin(app, client)
    bob_id = create_user(app, "bob")
    assert client.post("/admin/users", data={"username": "carol"}).status_code == 400
    assert client.post(f"/admin/users/{bob_id}/admin").status_code == 400
    assert client.post(f"/admin/users/{bob_id}/delete").status_code == 400
    assert user_named(app, "carol") is None and user_named(app, "bob") is not None
    assert not user_named(app, "bob").is_admin


def test_admin_resets_a_password_and_it_works_once_shown(app, client):
    token = signed_in_admin(app, client)
    bob_id = create_user(app, "bob")
    response = client.post(f"/admin/users/{bob_id}/password", data={"csrf_token": token})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    password = NEW_PASSWORD.search(response.get_data(as_text=True)).group(1)
    assert user_named(app, "bob").check_password(password)
    assert not user_named(app, "bob").check_password(TEST_PASSWORD)


def test_make_and_unmake_admin_but_never_oneself(app, client):
    token = signed_in_admin(app, client)
    root_id = user_named(app, "root").id
    bob_id = create_user(app, "bob")
    client.post(f"/admin/users/{bob_id}/admin", data={"csrf_token": token})
    assert user_named(app, "bob").is_admin
    refused = client.post(f"/admin/users/{root_id}/admin", data={"csrf_token": token}, follow_redirects=True)
    assert "you cannot remove your own admin rights" in refused.get_data(as_text=True)
    assert user_named(app, "root").is_admin
    client.post(f"/admin/users/{bob_id}/admin", data={"csrf_token": token})
    assert not user_named(app, "bob").is_admin


def test_delete_asks_first_then_deletes_the_user_and_their_messages(app, client):
    token = signed_in_admin(app, client)
    bob_id = create_user(app, "bob")
    insert_rows(app, [item_row(bob_id, "one"), item_row(bob_id, "two")])
    confirm = client.get(f"/admin/users/{bob_id}/delete")
    assert confirm.status_code == 200
    assert "2 stored messages" in confirm.get_data(as_text=True)
    assert user_named(app, "bob") is not None  # asking deletes nothing
    client.post(f"/admin/users/{bob_id}/delete", data={"csrf_token": token})
    assert user_named(app, "bob") is None
    assert messages_of(app, bob_id) == 0


def messages_of(app, user_id):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).where(UserItem.user_id == user_id))


def rows_for(user_id, count=3):
    now = datetime.now(UTC)
    return [build_row(user_id=user_id, subscription="projects/p/subscriptions/deleted", message_id=str(number),
                      data=b'{"n": 1}', attributes={}, publish_time=now, ordering_key="", delivery_attempt=None,
                      size=8, received_at=now) for number in range(count)]


def test_the_writer_stores_nothing_for_a_user_who_is_gone(app):
    # user_item has no foreign key (app.models.UserItem.user_id): the writer's own check is what refuses.
    bob_id = create_user(app, "bob")
    with app.app_context():
        delete_user(db.session.get(User, bob_id))
        db.session.commit()
        writer = BatchWriter(db.engine, bob_id)
        with pytest.raises(UserGone):
            writer.write(rows_for(bob_id))
    assert messages_of(app, bob_id) == 0


def test_a_polling_jobs_batch_is_not_stored_for_a_new_user_given_the_deleted_users_id(app):
    # SQLite gives the next user made the id of a deleted user when it was the highest. A job
    # still polling for the deleted user writes for its task, which went with the user.
    bob_id = create_user(app, "bob")
    with app.app_context():
        task = Task(id=uuid.uuid4().hex, name="polling_subscription", user_id=bob_id, description="Polling")
        db.session.add(task)
        db.session.commit()
        writer = BatchWriter(db.engine, bob_id, task.id)
        assert writer.write(rows_for(bob_id, 1)) == 1
        delete_user(db.session.get(User, bob_id))
        db.session.add(User(id=bob_id, username="carol", email="carol@example.com"))
        db.session.commit()
        with pytest.raises(UserGone):
            writer.write(rows_for(bob_id))
    assert messages_of(app, bob_id) == 0


@pytest.mark.parametrize("with_task", [False, True], ids=["writer without a task", "polling job's writer"])
def test_a_batch_written_while_its_user_is_being_deleted_waits_and_then_stores_nothing(app, with_task):
    # On PostgreSQL the writer checks the user (or its task) in the round trip that takes the lock
    # (BatchWriter._lock_and_check). Without a task, the check must run after the lock to see the
    # deletion; with one, the deleted task's row lock also holds the batch until the deletion commits.
    bob_id = create_user(app, "bob")
    outcome = {}
    task_id = None
    if with_task:
        with app.app_context():
            task_id = uuid.uuid4().hex
            db.session.add(Task(id=task_id, name="polling_subscription", user_id=bob_id, description="Polling"))
            db.session.commit()

    def write_batch(engine):
        try:
            outcome["stored"] = BatchWriter(engine, bob_id, task_id).write(rows_for(bob_id))
        except Exception as error:  # noqa: BLE001 - the test thread looks at it
            outcome["error"] = error

    with app.app_context():
        delete_user(db.session.get(User, bob_id))  # the deletes are made, not yet committed
        writing = threading.Thread(target=write_batch, args=(db.engine,), daemon=True)
        writing.start()
        writing.join(1.0)
        # On PostgreSQL, without the user's lock taken before the deletes, the batch would commit now
        # and outlive its user; on SQLite the deletes' write lock holds it.
        assert writing.is_alive(), outcome
        db.session.commit()
    writing.join(30)
    assert not writing.is_alive()
    assert isinstance(outcome.get("error"), UserGone), outcome
    assert user_named(app, "bob") is None
    assert messages_of(app, bob_id) == 0


def test_the_last_admin_cannot_delete_themselves_but_one_of_two_can(app, client):
    token = signed_in_admin(app, client)
    root_id = user_named(app, "root").id
    refused = client.post(f"/admin/users/{root_id}/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "is the last admin" in refused.get_data(as_text=True)
    assert user_named(app, "root") is not None
    create_user(app, "second", is_admin=True)
    gone = client.post(f"/admin/users/{root_id}/delete", data={"csrf_token": token})
    assert gone.status_code == 302 and gone.headers["Location"] == "/index"
    assert user_named(app, "root") is None
    assert client.get("/admin/users").status_code == 302  # signed out


def test_cli_keeps_the_same_rules(app, runner):
    create_user(app, "root", is_admin=True)
    refused = runner.invoke(args=["users", "delete", "root", "--yes"])
    assert refused.exit_code != 0 and "last admin" in refused.output
    assert runner.invoke(args=["users", "set-admin", "root", "--revoke"]).exit_code != 0
    assert user_named(app, "root").is_admin
    assert runner.invoke(args=["users", "create", "bob", "--password", "short"]).exit_code != 0
    assert runner.invoke(args=["users", "create", "bob", "--email", "root@example.com"]).exit_code != 0
    assert runner.invoke(args=["users", "create", "bob"]).exit_code == 0
    assert runner.invoke(args=["users", "set-admin", "bob"]).exit_code == 0
    assert runner.invoke(args=["users", "set-admin", "root", "--revoke"]).exit_code == 0
    assert user_named(app, "bob").is_admin and not user_named(app, "root").is_admin


def test_account_page_holds_the_password_form_and_the_live_page_does_not(app, client, auth):
    create_user(app, "alice")
    auth.login()
    account = client.get("/account").get_data(as_text=True)
    assert 'id="changepwd"' in account and 'action="/change_password"' in account
    for field in ["current_password", "new_password", "confirm_password"]:
        assert f'<label class="form-label" for="{field}">' in account
    assert 'id="changepwd"' not in client.get("/user/alice").get_data(as_text=True)
