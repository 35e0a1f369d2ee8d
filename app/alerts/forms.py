from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional


class AlertRuleForm(FlaskForm):
    """The rule's fields; app.alerts.rules checks them (names, the condition's syntax, the URL's address)."""

    name = StringField("Name", validators=[Length(max=128)])
    # The choices are the user's subscriptions (set by the view); any value is checked by the rules module.
    subscription = SelectField("Subscription", choices=[], validate_choice=False, validators=[Optional()])
    condition = TextAreaField("Condition", validators=[Length(max=2048)])
    url = StringField("Webhook URL", validators=[Length(max=2048)])
    format = SelectField("Format", validate_choice=False, default="json",
                         choices=[SelectChoice("json", "Generic JSON"), SelectChoice("slack", "Slack-compatible")])
    enabled = BooleanField("Enabled", default=True)
    submit = SubmitField("Save")


class ConfirmForm(FlaskForm):
    """A button that changes something: only its CSRF token."""
