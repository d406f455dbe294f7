"""`hand`: the model's own plain-PyTorch loss, ``hand_loss(x, y=None, particles=L)`` (−ELBO summed over
the batch), as a Pyro ELBO. The built-in VAE's is derived line by line in ``vae_pyro/models/hand.py``:
analytic KL to N(0, I), a reparameterised reconstruction term over L samples."""

import pyro
import torch
from pyro.infer import ELBO

from vae_pyro.estimators.spec import EstimatorSpec, expects


class HandELBO(ELBO):
    """The ELBO of ``model.__self__.hand_loss``: ``model`` must be a bound method of the module that
    defines it, as ``module.model`` is.

    :param num_particles: L, the samples per image the hand loss averages over.
    """

    @staticmethod
    def _module(model):
        module = getattr(model, "__self__", None)
        if not callable(getattr(module, "hand_loss", None)):
            raise ValueError("the hand estimator calls model.__self__.hand_loss: pass module.model, the bound "
                             "method of a module that defines hand_loss(x, y=None, particles=1, eps=None)")
        return module

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("the hand estimator runs no Pyro trace: it is the model's own plain-PyTorch loss")

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self._module(model).hand_loss(*args, particles=self.num_particles, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss's gradient into ``.grad``; the module is registered with ``pyro.module`` so that
        ``pyro.infer.SVI``, which optimises the parameters it sees registered, steps it."""
        module = self._module(model)
        pyro.module("hand", module)
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


SPEC = EstimatorSpec(
    name="hand", build=HandELBO, summary="ELBO; the model's own plain-PyTorch hand_loss (analytic KL, "
    "reparameterised reconstruction)", paper="Kingma & Welling 2013", reference=expects("elbo"),
    needs=frozenset({"hand_loss"}))
