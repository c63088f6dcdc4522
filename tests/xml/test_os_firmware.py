"""Which domains boot UEFI from pflash (snapshots take another path for them: libvirt 9.0 refuses
internal snapshots with pflash firmware)."""

from vmctl.xml.domain import Domain

from golden_cases import golden_path


def test_pflash_firmware_is_recognised_in_vmctl_s_and_other_definitions():
    assert Domain.from_xml(golden_path("uefi-secure-tpm").read_text()).os.boots_pflash()
    assert Domain.from_xml(golden_path("kvm-network-uefi").read_text()).os.boots_pflash()
    assert not Domain.from_xml(golden_path("hosted-passt").read_text()).os.boots_pflash()
    other = ('<domain type="kvm"><name>a</name><memory>1</memory><os><type>hvm</type>'
             '<loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os></domain>')
    assert Domain.from_xml(other).os.boots_pflash()
