from dsmpacs.cli import main

main()
