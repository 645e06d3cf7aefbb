from causalvis.cli import main

main()
