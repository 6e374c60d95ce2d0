"""A small data set the tests make themselves, so the suite means something without ../shared."""
SMALL_NAMES = """emma olivia ava isabella sophia mia charlotte amelia harper evelyn abigail emily
elizabeth mila ella avery sofia camila aria scarlett victoria madison luna grace chloe penelope
layla riley zoey nora lily eleanor hannah lillian addison aubrey ellie stella natalie zoe leah
hazel violet aurora savannah audrey brooklyn bella claire skylar liam noah william james oliver
benjamin elijah lucas mason logan alexander ethan jacob michael daniel henry jackson sebastian
aiden matthew samuel david joseph carter owen wyatt john jack luke jayden dylan grayson levi
isaac gabriel julian mateo anthony jaxon lincoln joshua christopher andrew theodore caleb ryan""".split()


def write_small_data(path):
    path.write_text("\n".join(SMALL_NAMES) + "\n", encoding="utf-8")
    return path
