import sqlalchemy as sa

from app.extensions import db
from app.models import User
from tests.conftest import TEST_PASSWORD, create_user


def test_index_shows_sign_in_form_with_csrf_token(client):
    page = client.get("/").get_data(as_text=True)
    assert 'name="username"' in page and 'name="password"' in page and 'name="remember_me"' in page
    assert 'name="csrf_token"' in page
    assert '<meta name="csrf-token"' in page


def test_wrong_password_shows_error_and_signs_nobody_in(app, client, auth):
    create_user(app, "alice")
    response = auth.login(password="not-the-password")
    assert response.status_code == 401
    assert "Invalid username or password" in response.get_data(as_text=True)
    assert client.get("/user/alice").status_code == 302  # still signed out: redirected to sign-in


def test_right_password_lands_on_own_page(app, client, auth):
    create_user(app, "alice")
    response = auth.login()
    assert response.status_code == 302
    assert response.headers["Location"] == "/user/alice"
    page = client.get("/user/alice")
    assert page.status_code == 200
    assert "Messages for alice" in page.get_data(as_text=True)


def test_signed_in_user_is_redirected_from_index_to_own_page(app, client, auth):
    create_user(app, "alice")
    auth.login()
    assert client.get("/index").headers["Location"] == "/user/alice"


def test_next_redirect_stays_on_site(app, client, auth):
    create_user(app, "alice")
    for hostile in ["//evil.example", "https://evil.example", "/\\evil.example", "https:/evil.example",
                    " //evil.example", "http://localhost@evil.example"]:
        token = auth.csrf_token()
        response = client.post(
            "/index", query_string={"next": hostile},
            data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 302
        location = response.headers["Location"]
        assert "evil.example" not in location, hostile
        assert location == "/user/alice"
        auth.logout()


def test_local_next_redirect_is_followed(app, client, auth):
    create_user(app, "alice")
    token = auth.csrf_token()
    response = client.post("/index", query_string={"next": "/pygments.css"},
                           data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/pygments.css"


def test_login_without_csrf_token_is_rejected(app, client):
    create_user(app, "alice")
    response = client.post("/index", data={"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code in (200, 400)
    assert client.get("/user/alice").status_code == 302


def test_logout_signs_out(app, client, auth):
    create_user(app, "alice")
    auth.login()
    auth.logout()
    assert client.get("/user/alice").status_code == 302


def test_non_admin_gets_403_on_another_users_page(app, client, auth):
    create_user(app, "alice")
    create_user(app, "bob")
    auth.login("bob")
    assert client.get("/user/alice").status_code == 403
    assert client.get("/useritems", query_string={"user": "alice"}).status_code == 403


def test_admin_may_view_another_users_page(app, client, auth):
    create_user(app, "alice")
    create_user(app, "root", is_admin=True)
    auth.login("root")
    assert client.get("/user/alice").status_code == 200


def test_unknown_user_page_is_404(app, client, auth):
    create_user(app, "root", is_admin=True)
    auth.login("root")
    assert client.get("/user/nobody").status_code == 404


def _password_hash(app, username):
    with app.app_context():
        return db.session.scalar(sa.select(User.password_hash).where(User.username == username))


def test_change_password_without_csrf_token_is_rejected(app, client, auth):
    create_user(app, "alice")
    auth.login()
    before = _password_hash(app, "alice")
    response = client.post("/change_password", data={
        "current_password": TEST_PASSWORD, "new_password": "a-new-password", "confirm_password": "a-new-password"})
    assert response.status_code == 400
    assert _password_hash(app, "alice") == before


def test_change_password_needs_current_password(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    response = client.post("/change_password", headers={"X-CSRFToken": token}, data={
        "current_password": "wrong-one", "new_password": "a-new-password", "confirm_password": "a-new-password"})
    assert response.status_code == 400
    assert response.get_json()["status"] == "error"


def test_change_password_rejects_mismatch_and_short_passwords(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    for new, confirm in [("a-new-password", "another-password"), ("short", "short")]:
        response = client.post("/change_password", headers={"X-CSRFToken": token}, data={
            "current_password": TEST_PASSWORD, "new_password": new, "confirm_password": confirm})
        assert response.status_code == 400


def test_change_password_works_and_new_password_signs_in(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    response = client.post("/change_password", headers={"X-CSRFToken": token}, data={
        "current_password": TEST_PASSWORD, "new_password": "a-new-password", "confirm_password": "a-new-password"})
    assert response.status_code == 200
    assert response.get_json()["status"] == "success"
    auth.logout()
    assert auth.login(password=TEST_PASSWORD).status_code == 401
    assert auth.login(password="a-new-password").headers["Location"] == "/user/alice"


def test_passwords_are_hashed_with_scrypt(app):
    create_user(app, "alice")
    assert _password_hash(app, "alice").startswith("scrypt:")


def test_json_clients_get_json_errors_and_browsers_get_html(app, client, auth):
    create_user(app, "alice")
    auth.login()
    as_json = client.get("/user/nobody", headers={"Accept": "application/json"})
    assert as_json.status_code == 403 or as_json.status_code == 404
    assert as_json.is_json and as_json.get_json()["status"] == "error"
    as_html = client.get("/user/nobody", headers={"Accept": "text/html"})
    assert as_html.mimetype == "text/html"


def test_changing_the_password_signs_out_other_sessions_but_not_this_one(app, client):
    from tests.conftest import AuthActions

    create_user(app, "alice")
    other = app.test_client()
    AuthActions(other).login(remember_me="y")
    assert other.get("/user/alice").status_code == 200
    auth = AuthActions(client)
    auth.login()
    token = auth.csrf_token("/user/alice")
    response = client.post("/change_password", headers={"X-CSRFToken": token}, data={
        "current_password": TEST_PASSWORD, "new_password": "a-new-password", "confirm_password": "a-new-password"})
    assert response.status_code == 200
    assert client.get("/user/alice").status_code == 200  # this session goes on
    assert other.get("/user/alice").status_code == 302  # the other one, remember-me and all, is out
    assert other.get("/notifications", headers={"Accept": "application/json"}).status_code == 401


def test_sign_out_is_a_post_with_a_csrf_token(app, client, auth):
    """A link or image on another site can no longer sign the user out."""
    create_user(app, "alice")
    auth.login()
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token
    assert client.get("/user/alice").status_code == 200
    assert auth.logout().status_code == 302
    assert client.get("/user/alice").status_code == 302


def copy_cookie(source, target, name: str) -> None:
    cookie = source.get_cookie(name)
    assert cookie is not None, name
    target.set_cookie(name, cookie.value, domain=cookie.domain or "localhost")


def test_sign_out_ends_copied_session_and_remember_me_cookies(app, client, auth):
    """Issue 14: a copied cookie kept working for 30 days after sign-out."""
    create_user(app, "alice")
    auth.login(remember_me="y")
    copied_session, copied_remember = app.test_client(), app.test_client()
    copy_cookie(client, copied_session, "session")
    copy_cookie(client, copied_remember, "remember_token")
    assert copied_session.get("/user/alice").status_code == 200
    assert copied_remember.get("/user/alice").status_code == 200
    copy_cookie(client, copied_remember, "remember_token")  # the same cookie again, for a fresh session
    copied_remember.delete_cookie("session", domain="localhost")

    auth.logout()
    assert client.get("/user/alice").status_code == 302
    assert copied_session.get("/user/alice").status_code == 302
    assert copied_remember.get("/user/alice").status_code == 302
    # Signing in again works, with a new cookie.
    auth.login()
    assert client.get("/user/alice").status_code == 200
