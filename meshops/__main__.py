from meshops.cli.main import main

main()
