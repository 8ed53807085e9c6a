from sdf.cli import main

main()
