from vesselcli.cli import main

main()
