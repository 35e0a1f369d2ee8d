from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError


def parse_attributes(text: str) -> dict[str, str]:
    """key=value lines into a dict; blank lines are skipped."""
    attributes = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"line {number} must be key=value")
        attributes[key.strip()] = value
    return attributes


class AttributesField(TextAreaField):
    def pre_validate(self, form):
        try:
            parse_attributes(self.data)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class PublishForm(FlaskForm):
    topic = StringField("Topic (name or projects/P/topics/T)", validators=[DataRequired(), Length(max=512)])
    data = TextAreaField("Data", validators=[Length(max=1_000_000)])
    attributes = AttributesField("Attributes (key=value, one per line)")
    ordering_key = StringField("Ordering key", validators=[Length(max=1024)])
    submit = SubmitField("Publish")


class ReplayForm(FlaskForm):
    topic = StringField("Topic (empty: the topic of the message's subscription)", validators=[Length(max=512)])
    submit = SubmitField("Replay")


class RetentionForm(FlaskForm):
    """One user's retention for one subscription: days (0 keeps forever), empty for the default."""

    user_id = HiddenField(validators=[DataRequired()])
    subscription = HiddenField(validators=[DataRequired(), Length(max=512)])
    days = IntegerField("Days", validators=[Optional(), NumberRange(min=0, max=36500)])
    submit = SubmitField("Set")


class CreateUserForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    email = StringField("Email (empty: username@localhost)",
                        validators=[Optional(), Length(max=120),
                                    Regexp(r"^[^@\s]+@[^@\s]+$", message="Not an email address.")])
    is_admin = BooleanField("Administrator")
    submit = SubmitField("Create user")


class UserActionForm(FlaskForm):
    """A button that changes a user: only the CSRF token travels."""
