from vae_pyro.cli import main

main()
