<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="AllStyleCategories">
  <renderer-v2 type="graduatedSymbol" attr="max_score" graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" forceraster="0">
    <ranges>
      <range lower="0" upper="0.8" symbol="0" label="crack, score &lt; 0.8" render="true"/>
      <range lower="0.8" upper="0.95" symbol="1" label="crack, score 0.8 - 0.95" render="true"/>
      <range lower="0.95" upper="1.0001" symbol="2" label="crack, score &gt;= 0.95" render="true"/>
    </ranges>
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option type="QString" name="color" value="253,141,60,60"/>
            <Option type="QString" name="outline_color" value="253,141,60,255"/>
            <Option type="QString" name="outline_width" value="0.5"/>
            <Option type="QString" name="style" value="solid"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="1" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option type="QString" name="color" value="240,59,32,70"/>
            <Option type="QString" name="outline_color" value="240,59,32,255"/>
            <Option type="QString" name="outline_width" value="0.6"/>
            <Option type="QString" name="style" value="solid"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="2" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option type="QString" name="color" value="189,0,38,80"/>
            <Option type="QString" name="outline_color" value="189,0,38,255"/>
            <Option type="QString" name="outline_width" value="0.8"/>
            <Option type="QString" name="style" value="solid"/>
          </Option>
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="round(length, 2) || ' ' || unit" isExpression="1" fontSize="8" textColor="50,50,50,255"/>
    </settings>
  </labeling>
  <layerGeometryType>2</layerGeometryType>
</qgis>
