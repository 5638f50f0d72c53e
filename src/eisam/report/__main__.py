from eisam.report.cli import main

main()
