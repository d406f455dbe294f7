"""The one exception a user should ever see from vae_pyro."""


class VaeError(Exception):
    """A problem the user can fix: the message names the problem and the fix, on one line.

    The command line prints it as ``vae-pyro: error: <message>`` and exits with ``exit_code``.
    """

    exit_code = 2
