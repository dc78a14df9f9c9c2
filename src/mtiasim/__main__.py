from mtiasim.cli import main

main()
