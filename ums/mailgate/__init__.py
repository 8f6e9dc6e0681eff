"""ums.mailgate: e-mail in and out.

``mime`` (pure) composes the notification mails, ``maildir`` delivers locally,
``smtp_out`` hands mail to a smarthost.  Import the modules themselves; this
package file stays empty so that importing one does not pull in the others.
"""
