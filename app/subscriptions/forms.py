from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length, Regexp

# A subscription id, or a full projects/P/subscriptions/S path (Pub/Sub's own naming rules).
NAME_PATTERN = r"^(projects/[a-z][a-z0-9\-]{4,28}[a-z0-9]/subscriptions/)?[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$"


class AddSubscriptionForm(FlaskForm):
    name = StringField(
        "Subscription name or path",
        validators=[DataRequired(), Length(max=512),
                    Regexp(NAME_PATTERN, message="Give a subscription id (my-sub) or a full path "
                                                 "(projects/my-project/subscriptions/my-sub).")],
    )
    submit = SubmitField("Add")


class WatchTopicForm(FlaskForm):
    """Create a tap: the app's own subscription on a topic, for this user alone."""

    topic = StringField("Topic", validators=[DataRequired(message="Give a topic to watch."), Length(max=512)])
    filter = StringField("Filter (optional)", validators=[Length(max=1024)])
    submit = SubmitField("Watch topic")
