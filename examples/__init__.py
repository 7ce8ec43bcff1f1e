"""The example agents of the story: users sign up, get a welcome comment and a welcome email.

Run them all with the launcher (memory:// backends, nothing to install)::

    marun examples.settings --duration 15

Flow: ``UserAgent`` creates a user and sends the ``user_created`` signal and a
``mailer`` message; ``CommentAgent`` posts a welcome comment on the signal;
``EmailAgent`` sends the email and reports on ``email_sent``; ``UserAgent``
then asks ``CommentAgent`` over RPC how many comments the user has.
"""
